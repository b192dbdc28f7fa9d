#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("rpc_response", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::rpc_response(data);
});
