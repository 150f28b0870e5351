//! VRRPv3 codec and router state machine (sans-IO).
