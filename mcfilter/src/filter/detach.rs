//! Detach: unpin an interface's link (which detaches the program) and, with the last
//! interface, remove the state.

use std::{collections::BTreeSet, io};

use aya::programs::links::{FdLink, PinnedLink};

use super::{
    chain::{self, HandBack},
    multiprog,
};
use crate::{Error, maps::Maps, pin::StateDir, sys};

/// What `detach` did.
#[derive(Debug)]
pub struct Detached {
    /// The interface's name.
    pub iface: String,
    /// The last interface was detached and the state dir removed.
    pub state_removed: bool,
    /// What runs on the interface now.
    pub hand_back: HandBack,
}

/// Detaches the filter from `iface`, hands a chained interface back to its next program, and
/// removes the state with the last interface.
pub fn detach(state: &StateDir, iface: &str) -> Result<Detached, Error> {
    let _lock = state.prepare_and_lock()?;
    let mut maps = Maps::open(state)?;
    let ifindex = find_ifindex(state, &maps, iface)?;
    let hand_back = if state.component(ifindex).exists() {
        // A dispatcher's component: the dispatcher goes on without it (or goes, if it ran
        // only mcfilter); then its pin goes, so the interface is no longer attached here.
        let hand_back = multiprog::leave(state, iface, ifindex)?;
        crate::fault::step();
        crate::pin::remove_pin(&state.component(ifindex))?;
        hand_back
    } else if state.program(ifindex).exists() {
        // Chained: the next program takes mcfilter's place (one atomic swap); then the pins go,
        // the program's first, so the interface is no longer attached in the state.
        let next = crate::maps::iface_meta(state)?
            .get(&ifindex)
            .map_or(0, |meta| meta.next);
        let hand_back = chain::hand_back(state, iface, ifindex, next)?;
        crate::fault::step();
        crate::pin::remove_pin(&state.program(ifindex))?;
        crate::fault::step();
        crate::pin::remove_pin(&state.next(ifindex))?;
        hand_back
    } else {
        // Unpinning the link detaches the program: from here on the interface is not attached,
        // whatever else this command gets done before it is stopped.
        unpin_link(state, ifindex).map_err(|err| Error::Unpin {
            iface: iface.to_owned(),
            err,
        })?;
        HandBack::Nothing
    };
    crate::fault::step();
    forget_unlinked(state, &mut maps)?;
    let state_removed = state.attached_ifindexes()?.is_empty();
    if state_removed {
        drop(maps);
        state.remove()?;
    }
    Ok(Detached {
        iface: iface.to_owned(),
        state_removed,
        hand_back,
    })
}

/// Removes the records and counters of every interface whose link is not pinned: the one
/// detach unpinned, and whatever an attach or detach killed halfway left.
pub(super) fn forget_unlinked(state: &StateDir, maps: &mut Maps) -> Result<(), Error> {
    let linked = state.attached_ifindexes()?;
    let mut unlinked: BTreeSet<u32> = maps.ifaces()?.into_iter().map(|(index, _)| index).collect();
    unlinked.extend(crate::maps::iface_meta(state)?.into_keys());
    unlinked.extend(state.counted_ifindexes()?);
    unlinked.extend(state.chained_ifindexes()?);
    unlinked.retain(|index| !linked.contains(index));
    for ifindex in unlinked {
        maps.forget_iface(ifindex)?;
        crate::fault::step();
        crate::maps::forget_iface_meta(state, ifindex)?;
        crate::fault::step();
        crate::pin::remove_pin(&state.iface_stats(ifindex))?;
        crate::fault::step();
        crate::pin::remove_pin(&state.next(ifindex))?;
        crate::fault::step();
    }
    Ok(())
}

/// The ifindex mcfilter attached to as `iface`: by the interface's current name, or by the name
/// it had at attach time (it may have been renamed or deleted since).
fn find_ifindex(state: &StateDir, maps: &Maps, iface: &str) -> Result<u32, Error> {
    let current = sys::ifindex(iface);
    if let Ok(index) = current
        && state.holds(index)
    {
        return Ok(index);
    }
    let recorded = maps
        .ifaces()?
        .into_iter()
        .find(|(index, info)| sys::name_from_bytes(&info.name) == iface && state.holds(*index));
    match (recorded, current) {
        (Some((index, _)), _) => Ok(index),
        (None, Ok(_)) => Err(Error::NotAttachedTo {
            iface: iface.to_owned(),
        }),
        (None, Err(err)) => Err(err),
    }
}

pub(super) fn unpin_link(state: &StateDir, ifindex: u32) -> io::Result<()> {
    let pinned = PinnedLink::from_pin(state.link(ifindex)).map_err(io::Error::other)?;
    // Unpinning leaves our fd as the last reference: dropping it detaches the program.
    let link: FdLink = pinned.unpin()?;
    drop(link);
    Ok(())
}
