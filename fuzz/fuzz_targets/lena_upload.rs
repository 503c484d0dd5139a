//! LENA's server given arbitrary bytes as a node's upload (the (q, v) pair with a top-k v, the
//! dense v alone, a scaled-sign v) returns an error or applies it; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lena_algo::{AlgorithmParams, CompressorParams, Kernels, LenaParams, Message, Uploads};
use lena_policy::drift::DriftKind;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let d = 1 + data[0] as usize % 64;
    let bytes = data[2..].to_vec();
    let bits = (8 * bytes.len() as u64).saturating_sub(u64::from(data[1] % 8));
    let Ok(msg) = Message::from_bytes(bytes, bits) else { return };
    for (drift, compressor) in [
        (DriftKind::Momentum { gamma: 0.1 }, Some(CompressorParams::top_k(d.div_ceil(3)))),
        (DriftKind::LastUpload, None),
        (DriftKind::Average, Some(CompressorParams::ScaledSign)),
    ] {
        let params =
            AlgorithmParams::new(0.1, LenaParams { drift, compressor, ..LenaParams::default() });
        let alg = params.check(d).expect("valid parameters");
        let mut server = alg.server(2, d, Kernels::detect());
        let msgs = [msg.clone(), Message::default()];
        let mut w = vec![0.0f32; d];
        let _ = server.apply(0, &mut w, Uploads::new(&msgs, &[true, false]));
    }
});
