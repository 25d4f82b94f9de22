//! The deployment jobs against real databases and the Django fixture.

mod ensureadmin;
mod lockedmigrate;
mod wait4db;
