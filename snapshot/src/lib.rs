//! Live CRIU checkpoint of a container, preserved as evidence.
//!
//! This room will drive CRIU (>= 4.1, through the `rust-criu` crate's RPC) with leave-running,
//! collect the facts a responder needs beside the images (config, mounts, environment, open
//! files and sockets, the process tree, filesystem changes) and seal it all in a case directory
//! whose manifest hashes every file.
