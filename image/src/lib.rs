//! Reproducible node image build, measurement precalculation and the QEMU guest test harness.
//!
//! - [`debian`]: pinned Debian packages (`image/debian.lock`) and the shared download cache;
//! - [`kernel`]: the pinned kernel and its module dependency order;
//! - [`cpio`], [`initramfs`]: reproducible initramfs archives;
//! - [`pe`], [`disk`]: the Unified Kernel Image and its GPT/FAT disk;
//! - [`build`]: `make image`; [`kubernetes`]: the optional Kubernetes flavour;
//! - [`measure`]: predicted PCRs and TCG event log replay;
//! - [`vm`]: boot test programs (or the node image) in QEMU for other crates' tests;
//! - [`nodevm`]: boot the node image the way the provider's QEMU backend does.

pub mod build;
pub mod cpio;
pub mod debian;
pub mod disk;
pub mod initramfs;
pub mod kernel;
pub mod kubernetes;
pub mod measure;
pub mod nodevm;
pub mod pe;
pub mod vm;
