//! LAQ's innovation decoder returns an error or a vector for any bytes; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lena_compress::{Message, laq};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let d = 1 + data[0] as usize % 64;
    let bytes = data[2..].to_vec();
    let bits = (8 * bytes.len() as u64).saturating_sub(u64::from(data[1] % 8));
    let Ok(msg) = Message::from_bytes(bytes, bits) else { return };
    let mut qhat = vec![0.0f32; d];
    let _ = laq::decode(&msg, 1 + u32::from(data[1]) % 8, &mut qhat);
});
