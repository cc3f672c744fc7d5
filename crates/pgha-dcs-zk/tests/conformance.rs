//! The DCS conformance suite against a real ZooKeeper 3.8.

mod common;

pgha_testkit::dcs_conformance_suite!(common::ZkBackend::start());
