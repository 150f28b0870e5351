//! Test hosts in network namespaces for Tandem's network tests.
