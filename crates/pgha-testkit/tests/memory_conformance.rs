//! The conformance suite against the in-memory DCS (on the real clock).

pgha_testkit::dcs_conformance_suite!(pgha_testkit::memory::MemoryBackend::start());
