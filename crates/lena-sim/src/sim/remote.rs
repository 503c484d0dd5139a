//! The worker side of a multi-process run and the server's end of its exchange.

use super::state::{decode_f32s, visit_node};
use super::*;

/// The server's copy of a node's upload from another process: exactly `ceil(bits / 8)` bytes,
/// the length the bits were charged for (checked on every upload).
pub(super) fn receive_upload(
    round: u64,
    it: Item<'_>,
    msg: &mut Message,
    sent: &mut bool,
) -> Result<()> {
    *sent = it.bits > 0;
    if !*sent {
        return Ok(());
    }
    if it.bytes.len() as u64 != it.bits.div_ceil(8) {
        return Err(Error::Transport(format!(
            "node {}'s upload at round {round}: {} bytes for {} bits (expected {})",
            it.node,
            it.bytes.len(),
            it.bits,
            it.bits.div_ceil(8)
        )));
    }
    msg.set_from(it.bytes, it.bits)
        .map_err(|e| Error::Transport(format!("node {}'s upload at round {round}: {e}", it.node)))
}

impl Simulation {
    /// Worker process of a multi-process run: obeys the server's commands until it says the
    /// run is over. Returns the transport's error if the server goes silent or away.
    pub fn serve(&mut self) -> Result<()> {
        let mut payload = Vec::new();
        loop {
            let round = self.round;
            let ex = self
                .exchange
                .as_mut()
                .ok_or_else(|| Error::Config("serve() needs an exchange".into()))?;
            match ex.next_command(round, &mut payload)? {
                Command::Round => {
                    if !self.fresh {
                        self.w_prev.copy_from_slice(&self.w);
                    }
                    self.fresh = false;
                    decode_f32s(&payload, &mut self.w).map_err(|e| {
                        Error::Transport(format!("round {round}'s parameters: {e}"))
                    })?;
                    self.node_phase(round);
                    let items: Vec<Item<'_>> = (0..self.nodes.len())
                        .filter(|&m| self.hosted[m])
                        .map(|m| {
                            let msg = &self.msgs[m];
                            let sent = self.sent[m];
                            Item {
                                node: m,
                                bits: if sent { msg.bits() } else { 0 },
                                bytes: if sent { msg.bytes() } else { &[] },
                            }
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::Uploads, &items)?;
                    // The delivery outcome (lost, dropped) the server will see, for the nodes'
                    // feedback next round; counters here are not reported.
                    self.account(round);
                    self.round += 1;
                }
                Command::Evaluate => {
                    // At the server's current parameters (this process's are a round behind).
                    let mut w = vec![0.0; self.w.len()];
                    decode_f32s(&payload, &mut w).map_err(|e| {
                        Error::Transport(format!("round {round}'s parameters: {e}"))
                    })?;
                    let losses = self.hosted_losses(Some(&w));
                    let bytes: Vec<(usize, [u8; 8])> =
                        losses.iter().map(|&(m, l)| (m, l.to_le_bytes())).collect();
                    let items: Vec<Item<'_>> = bytes
                        .iter()
                        .map(|(m, b)| Item {
                            node: *m,
                            bits: 64,
                            bytes: b,
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::Losses, &items)?;
                }
                Command::Checkpoint => {
                    let dropout = self.model.has_dropout();
                    let mut sections = Vec::new();
                    for m in (0..self.nodes.len()).filter(|&m| self.hosted[m]) {
                        let mut s = Saver::default();
                        visit_node(
                            &mut s,
                            &mut self.nodes[m],
                            &mut self.msgs[m],
                            &mut self.sent[m],
                            dropout,
                        );
                        sections.push((m, s.out));
                    }
                    let items: Vec<Item<'_>> = sections
                        .iter()
                        .map(|(m, b)| Item {
                            node: *m,
                            bits: 8 * b.len() as u64,
                            bytes: b,
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::States, &items)?;
                }
                Command::Restore => {
                    let bytes = std::mem::take(&mut payload);
                    self.load_state(&bytes)?;
                }
                Command::Finish => return Ok(()),
            }
        }
    }

    /// Server of a multi-process run: tells the workers the run is over (after [`Self::run`]
    /// returned, whatever it returned).
    pub fn finish_workers(&mut self) -> Result<()> {
        match self.exchange.as_mut().filter(|e| e.is_server()) {
            Some(ex) => ex.command(self.round, Command::Finish, &[]),
            None => Ok(()),
        }
    }

    /// What this process's transport carried (zero in-process).
    pub fn traffic(&self) -> crate::Traffic {
        self.exchange
            .as_ref()
            .map(|e| e.traffic())
            .unwrap_or_default()
    }

    /// Multi-process run: ends every process at once after an unrecoverable failure (see
    /// [`Exchange::abort`]).
    pub fn abort_exchange(&mut self) {
        if let Some(ex) = self.exchange.as_mut() {
            ex.abort();
        }
    }
}
