#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("service_head", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::service_head(data);
});
