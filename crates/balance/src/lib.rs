//! Load-balancing core: backend snapshots, selection, health hysteresis, persistence (pure).
