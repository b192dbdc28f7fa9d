#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("job_yaml", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::job_yaml(data);
});
