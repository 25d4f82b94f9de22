//! The Redis probe's RESP2/RESP3 reader on whatever a server might send: a
//! reply or an error, bounded in size and depth, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(why) = probehost_plugin_redis::describe_reply(bytes) {
        assert!(!why.is_empty());
    }
});
