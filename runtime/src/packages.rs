//! Servers that ship as npm or PyPI packages.

pub mod provenance;
