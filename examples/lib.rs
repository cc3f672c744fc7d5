//! Examples of embedding `pgha-core` in another Rust service; see the
//! `[[example]]` targets: `cargo run -p pgha-examples --example leader_election`.
