//! A Terraform plugin protocol v6 server library.
