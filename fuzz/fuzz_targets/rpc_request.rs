#![no_main]

libfuzzer_sys::fuzz_target!(init: weft_fuzz::init("rpc_request", 32 << 20), |data: &[u8]| {
    weft_fuzz::targets::rpc_request(data);
});
