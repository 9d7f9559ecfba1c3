//! Where a copy reads from: the primary (one-way mode), or the region a
//! change was pushed to (any-region mode).

use super::facts::RegionId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Primary,
    Region(RegionId),
}
