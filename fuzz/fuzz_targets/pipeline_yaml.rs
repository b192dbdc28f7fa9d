#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("pipeline_yaml", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::pipeline_yaml(data);
});
