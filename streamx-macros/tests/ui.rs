//! Compile-time tests of `#[stream_consumer]`: what compiles, and the exact diagnostics
//! of what does not. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p streamx-macros --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
    // What the attribute says without streamx's `msgpack` feature (with it, these compile).
    if !cfg!(feature = "msgpack") {
        t.compile_fail("tests/ui/fail_without_msgpack/*.rs");
    }
}
