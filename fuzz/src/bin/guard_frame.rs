#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| thv_sandbox_runtime::fuzzing::guard_frame(data));
