"""The desk agent: dial requests and screen pops for one desk, and the desk's dial policy."""
