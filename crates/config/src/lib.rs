//! Configuration model of the Tandem appliance: parse, validate, diff.
