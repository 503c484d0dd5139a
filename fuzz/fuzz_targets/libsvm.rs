//! The LIBSVM reader never panics and never allocates past its dense limit: what it accepts
//! converts to a consistent dense dataset, and any index, however large, is an error first.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A small limit, so that the fuzzer reaches it with short inputs.
    let opts = lena_data::libsvm::Options {
        n_features: None,
        max_dense_bytes: 1 << 22,
    };
    if let Ok(csr) = lena_data::libsvm::parse(text, "fuzz", opts) {
        assert_eq!(csr.indptr.len(), csr.n_rows() + 1);
        assert!(csr.n_rows() * csr.n_features * 4 <= 1 << 22);
        // Parsed rows always densify (distinct targets become classes).
        let (ds, classes) = csr.to_dataset().expect("parsed rows densify");
        assert_eq!(ds.n_samples(), csr.n_rows());
        assert!(classes.len() <= csr.n_rows());
    }
});
