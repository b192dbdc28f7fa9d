#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("image", 64 << 20), |data: &[u8]| {
    weft_fuzz::targets::image(data);
});
