//! Empty library target: `mcfilter` lists this crate as a build-dependency so that cargo rebuilds
//! it when the program changes, and a dependency needs a library target. The program is
//! `src/main.rs`.
#![no_std]
