//! Several georep instances sharing the work through etcd (issue 16, in
//! progress): etcd's v3 API through its JSON gateway ([`etcd`]), who is a
//! member ([`membership`]) and which member owns a repository ([`ring`]). Not wired into the daemon yet; a config has no
//! `cluster:` section until it is.

pub mod etcd;
pub mod membership;
pub mod ring;
