//! Partitions of a dataset's samples among M nodes.

use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

/// How samples are divided among nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Split {
    /// Shuffled, then cut into M nearly equal parts.
    Iid,
    /// The paper's non-IID split: each node holds one label; with M a multiple of the class
    /// count, each label's samples are divided among M / n_classes nodes (node
    /// `label * (M / n_classes) + j` holds the j-th part of that label, in file order).
    OneLabel,
    /// Label skew: for each class, node shares are drawn from Dirichlet(alpha, ..., alpha).
    Dirichlet {
        /// Concentration; small values give strong skew.
        alpha: f64,
    },
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "iid" => Ok(Split::Iid),
            "one_label" | "one-label" => Ok(Split::OneLabel),
            _ => match s.strip_prefix("dirichlet:") {
                Some(a) => a
                    .parse()
                    .map(|alpha| Split::Dirichlet { alpha })
                    .map_err(|_| {
                        format!("dirichlet:ALPHA needs a number, found {}", crate::quote(a))
                    }),
                None => Err(format!(
                    "unknown split {}, expected one of: iid, one_label, dirichlet:ALPHA",
                    crate::quote(s)
                )),
            },
        }
    }
}

/// Holds out `fraction` of the samples `0..labels.len()` for validation, class by class (each
/// class keeps its share: `round(fraction * count)` of its samples are held out, chosen by a
/// seeded shuffle). Returns `(kept, held)`, both ascending and disjoint, together all samples.
///
/// ```
/// let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
/// let (kept, held) = lena_data::split::hold_out(&labels, 2, 0.2, 7);
/// assert_eq!((kept.len(), held.len()), (8, 2));
/// assert_eq!(held.iter().map(|&i| labels[i]).sum::<u32>(), 1); // one of each class
/// ```
pub fn hold_out(
    labels: &[u32],
    n_classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7a11_da7e_0000_0000);
    let mut held_flag = vec![false; labels.len()];
    for class in 0..n_classes as u32 {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        shuffle(&mut idx, &mut rng);
        let n = ((fraction * idx.len() as f64).round() as usize).min(idx.len());
        for &i in &idx[..n] {
            held_flag[i] = true;
        }
    }
    let (held, kept): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| held_flag[i]);
    (kept, held)
}

/// Splits samples `0..labels.len()` among `n_nodes` nodes; returns each node's sample indices
/// (ascending within a node for `one_label`, shuffled for the others). Every node gets at least
/// one sample, or an error says why it cannot.
pub fn partition(
    labels: &[u32],
    n_classes: usize,
    n_nodes: usize,
    split: &Split,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    if n_nodes == 0 {
        return Err(Error::BadSplit(
            "the number of nodes must be at least 1, got 0".into(),
        ));
    }
    if n_nodes > n {
        return Err(Error::TooManyNodes {
            nodes: n_nodes,
            samples: n,
        });
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_5b11_7000_0000);
    let by_class = || {
        let mut c = vec![Vec::new(); n_classes];
        for (i, &l) in labels.iter().enumerate() {
            c[l as usize].push(i);
        }
        c
    };
    match split {
        Split::Iid => {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut rng);
            Ok(chunks(&order, n_nodes))
        }
        Split::OneLabel => {
            if !n_nodes.is_multiple_of(n_classes) {
                return Err(Error::BadSplit(format!(
                    "one_label split needs the number of nodes to be a multiple of the {n_classes} \
                     classes, got {n_nodes}"
                )));
            }
            let per = n_nodes / n_classes;
            let mut parts = Vec::with_capacity(n_nodes);
            for (c, idx) in by_class().into_iter().enumerate() {
                if idx.len() < per {
                    return Err(Error::BadSplit(format!(
                        "one_label split: class {c} has {} samples for {per} nodes",
                        idx.len()
                    )));
                }
                parts.extend(chunks(&idx, per));
            }
            Ok(parts)
        }
        Split::Dirichlet { alpha } => {
            if !(alpha.is_finite() && *alpha > 0.0) {
                return Err(Error::BadSplit(format!(
                    "dirichlet split: alpha must be a finite number > 0, got {alpha}"
                )));
            }
            let gamma = Gamma::new(*alpha, 1.0).map_err(|e| Error::BadSplit(e.to_string()))?;
            let classes = by_class();
            for _attempt in 0..100 {
                let mut parts = vec![Vec::new(); n_nodes];
                for idx in &classes {
                    let mut idx = idx.clone();
                    shuffle(&mut idx, &mut rng);
                    let w: Vec<f64> = (0..n_nodes).map(|_| gamma.sample(&mut rng)).collect();
                    let total: f64 = w.iter().sum();
                    // Cumulative cut points, so shares sum exactly to the class size.
                    let mut acc = 0.0;
                    let mut start = 0;
                    for (k, wk) in w.iter().enumerate() {
                        acc += wk;
                        let end = if k + 1 == n_nodes {
                            idx.len()
                        } else {
                            ((acc / total) * idx.len() as f64).round() as usize
                        };
                        let end = end.clamp(start, idx.len());
                        parts[k].extend_from_slice(&idx[start..end]);
                        start = end;
                    }
                }
                if parts.iter().all(|p| !p.is_empty()) {
                    for p in &mut parts {
                        shuffle(p, &mut rng);
                    }
                    return Ok(parts);
                }
            }
            Err(Error::BadSplit(format!(
                "dirichlet split with alpha = {alpha} left a node empty in 100 draws; raise alpha \
                 or lower the number of nodes ({n_nodes})"
            )))
        }
    }
}

fn shuffle<R: Rng>(v: &mut [usize], rng: &mut R) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

/// Cuts `v` into `k` contiguous parts whose sizes differ by at most one.
fn chunks(v: &[usize], k: usize) -> Vec<Vec<usize>> {
    let (q, r) = (v.len() / k, v.len() % k);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let len = q + usize::from(i < r);
        out.push(v[start..start + len].to_vec());
        start += len;
    }
    out
}
