"""The desk agent: dial requests and screen pops for one desk.

consumer (DeskAgent, the queue's handler), dials (the dial records and their
confirmation), unreadable (a request that does not decode), assistant (running
the 3CX Assistant), popup (screen pops, popup_command), dial_policy (what a desk may dial).
"""
