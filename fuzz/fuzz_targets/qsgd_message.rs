//! The QSGD (Elias-gamma and fixed-width codings) decoder returns an error or a vector for any bytes; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[allow(unused_imports)]
use lena_compress::{CompressorParams, IndexCoding, Message, QsgdCoding, QsgdNorm};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let d = 1 + data[0] as usize % 64;
    let bytes = data[2..].to_vec();
    let bits = (8 * bytes.len() as u64).saturating_sub(u64::from(data[1] % 8));
    let Ok(msg) = Message::from_bytes(bytes, bits) else { return };
    let params = [
        CompressorParams::qsgd(5, 7, QsgdNorm::L2),
        CompressorParams::qsgd(1 << 20, 0, QsgdNorm::Max),
        CompressorParams::Qsgd { levels: 5, bucket: 7, norm: QsgdNorm::L2, coding: QsgdCoding::Fixed },
    ];
    let mut out = vec![0.0f32; d];
    for p in params {
        let c = p.check(d).expect("valid parameters");
        let _ = c.decode(&msg, &mut out);
    }
});
