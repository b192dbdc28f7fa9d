#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("job_cbor", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::job_cbor(data);
});
