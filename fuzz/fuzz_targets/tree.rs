#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("tree", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::tree(data);
});
