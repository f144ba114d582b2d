//! The gateway's TOML configuration (examples/src/config.rs): arbitrary text through
//! `toml` into the raw serde structs and then the hand-written validation into typed
//! tunnels, including the static NAT table it builds. Nothing may panic; a config that
//! validates must also describe itself (`describe`, `weak_choices`) without panicking.
//!
//! The gateway has no library target, so the module is compiled here from its source file
//! (`#[path]`); it only depends on crates this fuzz package also depends on. Pre-shared
//! keys given as `{ file = ... }` or `{ env = ... }` are not resolved by `parse`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../examples/src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = config::parse(text, Path::new("fuzz.toml")) {
        let _ = config::describe(&cfg);
        for t in &cfg.tunnels {
            let _ = config::weak_choices(t);
        }
    }
});
