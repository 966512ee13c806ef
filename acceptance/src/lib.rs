//! Acceptance-test harness: builds a provider, runs the real terraform CLI against it.
