"""thresholds: the named limits the context and the facts use, and where they come from."""

#: packets within this window count as "the same instant" (a process exit closes all
#: its sockets in one pass, microseconds apart; 100 ms absorbs capture jitter)
INSTANT_S = 0.1
#: concurrent connects: this many SYNs to one server within INSTANT_S is a burst
BURST_CONNECTS = 4
#: this many server resets within INSTANT_S is a mass reset
MASS_RESETS = 3
#: a RST this soon after the last data is "right after" it: well under any server
#: idle timeout (>= 1 s in every server we know) and above delayed-ACK timers
#: (Linux 40-200 ms, Windows 200 ms)
RIGHT_AFTER_S = 1.0
#: scheduling slack between a segment's arrival and the RST it provokes: the kernel
#: answers in softirq (microseconds); a close() in the same event-loop turn takes
#: milliseconds. Added to the connection's round-trip time.
RACE_SLACK_S = 0.05
#: an idle gap matches the backend's idle timeout when within this fraction of it
#: (timers fire late by scheduling and tick granularity, e.g. gunicorn's 1 s loop)
TIMEOUT_MATCH = 0.25
#: idle closes shorter than this are "close after the response", not an idle timer
MIN_IDLE_CLOSE_S = 0.5
#: refused connects within this long after a server reset suggest a restart
RESTART_WINDOW_S = 30.0
