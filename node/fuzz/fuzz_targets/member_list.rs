//! A member list from another control plane (MemberSyncService, join tickets): protobuf
//! decoding, validation and merging must never panic. Also the kubeadm CA hash parser.
#![no_main]

use constellation_node::services::{kubernetes, members};
use constellation_node::state::ClusterState;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = constellation_node_api::v1::MemberList::decode(data)
        && let Ok((m, removed)) = members::from_list(&list)
    {
        let mut c = ClusterState::default();
        c.merge(m.clone(), &removed);
        // Idempotent: a second merge of the same list changes nothing.
        assert!(!c.merge(m, &removed));
    }
    let _ = kubernetes::ca_cert_hash(data);
});
