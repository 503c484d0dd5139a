//! Network models: how long a round's uploads take, from their sizes alone.
//!
//! Must not depend on: any other `lena-*` crate. A network model sees bit counts, never
//! parameters, so it changes a run's clock and never its iterates.
//!
//! - [`NetworkParams::Ideal`]: counts only; every round takes no time.
//! - [`NetworkParams::Lan`]: one shared channel of rate r, round-robin TDMA: a round takes the
//!   sum of its messages' sizes over r (EXPERIMENTS.md, "Network models").
//! - [`NetworkParams::Wan`]: each node's link rate is drawn once per realization from a set
//!   with given probabilities; uploads go in parallel, so a round takes as long as its slowest
//!   message.
//!
//! Each message also pays `header_bytes` of protocol overhead and a fixed `latency_ms`.
//! Statistics over many link-rate realizations come from a [`Trace`] of the run's message
//! sizes, recorded once, never from re-running training.
//!
//! ```
//! use lena_net::{NetworkParams, Trace};
//! let net = NetworkParams::Lan { rate_mbps: 1.0, header_bytes: 0, latency_ms: 0.0 }
//!     .check()
//!     .unwrap();
//! let mut trace = Trace::new(2);
//! trace.push_round(&[1_000_000, 0]).unwrap(); // node 0 sends 1 Mbit, node 1 is silent
//! let lat = trace.cumulative_latency(&net, &net.rates(2, 0));
//! assert!((lat[0] - 1.0).abs() < 1e-12);
//! ```

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A parameter out of its range.
    #[error("network.{field} must be {expected}, got {found}")]
    BadParam {
        /// The field, as in the config file.
        field: &'static str,
        /// The allowed range.
        expected: &'static str,
        /// The value given.
        found: String,
    },
    /// A round of the wrong width.
    #[error("trace round has {found} nodes, expected {expected}")]
    Width {
        /// Nodes per round of the trace.
        expected: usize,
        /// Nodes in the pushed round.
        found: usize,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Link rates of the paper's figure 4, in Mbps.
pub const PAPER_RATES_MBPS: [f64; 5] = [1.0, 5.0, 10.0, 100.0, 1000.0];
/// Figure 4a's probabilities over [`PAPER_RATES_MBPS`].
pub const UNIFORM: [f64; 5] = [0.2, 0.2, 0.2, 0.2, 0.2];
/// Figure 4b's probabilities over [`PAPER_RATES_MBPS`]: most nodes on slow links.
pub const SKEWED: [f64; 5] = [0.7, 0.2, 0.06, 0.03, 0.01];

/// Probabilities of the link rates: a named preset or explicit values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Probabilities {
    /// `"uniform"` ([`UNIFORM`]) or `"skewed"` ([`SKEWED`]).
    Preset(Preset),
    /// One probability per rate, summing to 1.
    Values(Vec<f64>),
}

/// Named probability presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// [`UNIFORM`].
    Uniform,
    /// [`SKEWED`].
    Skewed,
}

impl Default for Probabilities {
    fn default() -> Self {
        Probabilities::Preset(Preset::Uniform)
    }
}

fn default_rates() -> Vec<f64> {
    PAPER_RATES_MBPS.to_vec()
}

fn default_realizations() -> usize {
    100
}

/// Unchecked network model, as read from a config file (`[network]`, `kind = ...`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkParams {
    /// Counts only: no clock.
    #[default]
    Ideal,
    /// Local area network, round-robin TDMA on one channel of `rate_mbps`.
    Lan {
        /// Channel rate in Mbit/s.
        rate_mbps: f64,
        /// Protocol overhead per message, in bytes.
        #[serde(default)]
        header_bytes: u32,
        /// Fixed latency per message, in milliseconds.
        #[serde(default)]
        latency_ms: f64,
    },
    /// Wide area network: per-node link rates drawn from `rates_mbps` with `probabilities`.
    Wan {
        /// The possible link rates in Mbit/s (default: the paper's 1, 5, 10, 100, 1000).
        #[serde(default = "default_rates")]
        rates_mbps: Vec<f64>,
        /// Their probabilities: `"uniform"` (default), `"skewed"` or a list.
        #[serde(default)]
        probabilities: Probabilities,
        /// Protocol overhead per message, in bytes.
        #[serde(default)]
        header_bytes: u32,
        /// Fixed latency per message, in milliseconds (the paper mentions up to 270).
        #[serde(default)]
        latency_ms: f64,
        /// Link-rate realizations for the latency statistics (the paper uses 100).
        #[serde(default = "default_realizations")]
        realizations: usize,
    },
}

/// A checked network model.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    kind: Kind,
    header_bits: f64,
    latency_s: f64,
    realizations: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Ideal,
    Lan { rate_bps: f64 },
    Wan { rates_bps: Vec<f64>, cdf: Vec<f64> },
}

fn bad<T>(field: &'static str, expected: &'static str, found: impl ToString) -> Result<T> {
    Err(Error::BadParam {
        field,
        expected,
        found: found.to_string(),
    })
}

fn check_latency(ms: f64) -> Result<f64> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(ms / 1e3)
    } else {
        bad("latency_ms", "a finite number >= 0", ms)
    }
}

impl NetworkParams {
    /// Validates the parameters.
    pub fn check(&self) -> Result<Network> {
        match self {
            NetworkParams::Ideal => Ok(Network {
                kind: Kind::Ideal,
                header_bits: 0.0,
                latency_s: 0.0,
                realizations: 1,
            }),
            NetworkParams::Lan {
                rate_mbps,
                header_bytes,
                latency_ms,
            } => {
                if !(rate_mbps.is_finite() && *rate_mbps > 0.0) {
                    return bad("rate_mbps", "a finite number > 0", rate_mbps);
                }
                Ok(Network {
                    kind: Kind::Lan {
                        rate_bps: rate_mbps * 1e6,
                    },
                    header_bits: 8.0 * f64::from(*header_bytes),
                    latency_s: check_latency(*latency_ms)?,
                    realizations: 1,
                })
            }
            NetworkParams::Wan {
                rates_mbps,
                probabilities,
                header_bytes,
                latency_ms,
                realizations,
            } => {
                if rates_mbps.is_empty() || rates_mbps.iter().any(|r| !(r.is_finite() && *r > 0.0))
                {
                    return bad(
                        "rates_mbps",
                        "a non-empty list of finite rates > 0",
                        format!("{rates_mbps:?}"),
                    );
                }
                let p: Vec<f64> = match probabilities {
                    Probabilities::Preset(Preset::Uniform) => UNIFORM.to_vec(),
                    Probabilities::Preset(Preset::Skewed) => SKEWED.to_vec(),
                    Probabilities::Values(v) => v.clone(),
                };
                if p.len() != rates_mbps.len() {
                    return bad(
                        "probabilities",
                        "one probability per rate",
                        format!("{} probabilities for {} rates", p.len(), rates_mbps.len()),
                    );
                }
                let sum: f64 = p.iter().sum();
                if p.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || (sum - 1.0).abs() > 1e-9 {
                    return bad(
                        "probabilities",
                        "numbers >= 0 summing to 1",
                        format!("{p:?}"),
                    );
                }
                if *realizations == 0 {
                    return bad("realizations", ">= 1", 0);
                }
                let mut acc = 0.0;
                let cdf = p
                    .iter()
                    .map(|x| {
                        acc += x;
                        acc
                    })
                    .collect();
                Ok(Network {
                    kind: Kind::Wan {
                        rates_bps: rates_mbps.iter().map(|r| r * 1e6).collect(),
                        cdf,
                    },
                    header_bits: 8.0 * f64::from(*header_bytes),
                    latency_s: check_latency(*latency_ms)?,
                    realizations: *realizations,
                })
            }
        }
    }
}

impl Network {
    /// True for the ideal network (no clock).
    pub fn is_ideal(&self) -> bool {
        self.kind == Kind::Ideal
    }

    /// Realizations the latency statistics use (1 unless the rates are random).
    pub fn realizations(&self) -> usize {
        self.realizations
    }

    /// Link rates in bit/s of `nodes` nodes in realization `index` of a run seeded `seed`:
    /// the LAN's shared rate for all, or WAN rates drawn from realization `index`'s own stream.
    /// Empty for the ideal network.
    pub fn rates(&self, nodes: usize, seed: u64) -> Vec<f64> {
        match &self.kind {
            Kind::Ideal => Vec::new(),
            Kind::Lan { rate_bps } => vec![*rate_bps; nodes],
            Kind::Wan { rates_bps, cdf } => {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                (0..nodes)
                    .map(|_| {
                        let u: f64 = rng.random();
                        let i = cdf.iter().position(|&c| u < c).unwrap_or(cdf.len() - 1);
                        rates_bps[i]
                    })
                    .collect()
            }
        }
    }

    /// Seconds one round takes: `bits[m]` is node m's message size (0: it sent nothing),
    /// `rates` its link rate from [`Self::rates`].
    pub fn round_latency(&self, bits: &[u32], rates: &[f64]) -> f64 {
        match &self.kind {
            Kind::Ideal => 0.0,
            Kind::Lan { rate_bps } => {
                // TDMA: the messages go one after the other on the shared channel.
                let mut total = 0.0;
                let mut messages = 0u32;
                for &b in bits {
                    if b > 0 {
                        total += f64::from(b) + self.header_bits;
                        messages += 1;
                    }
                }
                total / rate_bps + f64::from(messages) * self.latency_s
            }
            Kind::Wan { .. } => {
                // Parallel uploads: the slowest message sets the round's time.
                let mut slowest = 0.0f64;
                let mut any = false;
                for (&b, &r) in bits.iter().zip(rates) {
                    if b > 0 {
                        slowest = slowest.max((f64::from(b) + self.header_bits) / r);
                        any = true;
                    }
                }
                if any { slowest + self.latency_s } else { 0.0 }
            }
        }
    }
}

/// Every round's message sizes, node by node (0: nothing sent), recorded once per run so that
/// latency under any number of link-rate realizations is computed without re-training.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    nodes: usize,
    bits: Vec<u32>,
}

/// Latency statistics over realizations, at one round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Round (1-based count of rounds completed).
    pub rounds: u64,
    /// Mean over realizations of the cumulative latency, seconds.
    pub mean: f64,
    /// Smallest cumulative latency over the realizations, seconds.
    pub min: f64,
    /// Largest cumulative latency over the realizations, seconds.
    pub max: f64,
    /// 5th percentile (nearest rank).
    pub p5: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
}

impl Trace {
    /// An empty trace of `nodes` nodes per round.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            bits: Vec::new(),
        }
    }

    /// Nodes per round.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> usize {
        self.bits.len().checked_div(self.nodes).unwrap_or(0)
    }

    /// Round `t`'s sizes.
    pub fn round(&self, t: usize) -> &[u32] {
        &self.bits[t * self.nodes..(t + 1) * self.nodes]
    }

    /// Every round's sizes, round after round (for checkpoints).
    pub fn raw(&self) -> &[u32] {
        &self.bits
    }

    /// A trace from [`Self::raw`]'s values; `None` if they are not whole rounds.
    pub fn from_raw(nodes: usize, bits: Vec<u32>) -> Option<Self> {
        (nodes > 0 && bits.len().is_multiple_of(nodes)).then_some(Self { nodes, bits })
    }

    /// Appends a round.
    ///
    /// # Errors
    /// If `bits` is not one entry per node.
    pub fn push_round(&mut self, bits: &[u32]) -> Result<()> {
        if bits.len() != self.nodes {
            return Err(Error::Width {
                expected: self.nodes,
                found: bits.len(),
            });
        }
        self.bits.extend_from_slice(bits);
        Ok(())
    }

    /// Cumulative latency after each round for one realization's `rates`.
    pub fn cumulative_latency(&self, net: &Network, rates: &[f64]) -> Vec<f64> {
        let mut acc = 0.0;
        (0..self.rounds())
            .map(|t| {
                acc += net.round_latency(self.round(t), rates);
                acc
            })
            .collect()
    }

    /// Statistics over `net`'s realizations (seeds `seed`, `seed + 1`, ...) of the cumulative
    /// latency at each round listed in `at` (1-based round counts, at most [`Self::rounds`]).
    /// Realizations run in parallel; the result does not depend on the thread count.
    pub fn latency_stats(&self, net: &Network, seed: u64, at: &[u64]) -> Vec<LatencyStats> {
        let runs: Vec<Vec<f64>> = (0..net.realizations() as u64)
            .into_par_iter()
            .map(|r| {
                let rates = net.rates(self.nodes, seed.wrapping_add(r));
                let cum = self.cumulative_latency(net, &rates);
                at.iter()
                    .map(|&t| if t == 0 { 0.0 } else { cum[t as usize - 1] })
                    .collect()
            })
            .collect();
        at.iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
                v.sort_by(f64::total_cmp);
                let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
                LatencyStats {
                    rounds: t,
                    mean: v.iter().sum::<f64>() / v.len() as f64,
                    min: v[0],
                    max: v[v.len() - 1],
                    p5: rank(0.05),
                    p95: rank(0.95),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
