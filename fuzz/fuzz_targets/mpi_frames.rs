//! The MPI backend's frame decoders never panic on arbitrary bytes; what they accept
//! re-encodes to the same frame.
#![no_main]
use lena_mpi::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((cmd, round, payload)) = wire::decode_command(data) {
        let mut again = Vec::new();
        wire::encode_command(cmd, round, payload, &mut again);
        assert_eq!(again, data);
    }
    if let Ok(h) = wire::decode_header(data) {
        let bytes = [0u8; 1];
        let items: Vec<lena_sim::Item<'_>> = h
            .items
            .iter()
            .enumerate()
            .map(|(node, bits)| lena_sim::Item {
                node,
                bits: bits.unwrap_or(0),
                bytes: if bits.is_some() { &bytes } else { &[] },
            })
            .collect();
        let mut again = Vec::new();
        wire::encode_header(h.kind, h.round, &items, &mut again);
        // Uploads flagged with 0 bits re-encode as silent; every other header is reproduced.
        if h.kind != lena_sim::Items::Uploads || h.items.iter().all(|b| *b != Some(0)) {
            assert_eq!(again, data);
        }
    }
});
