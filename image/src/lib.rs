//! Reproducible node image build and measurement precalculation.
