#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("transfer", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::transfer(data);
});
