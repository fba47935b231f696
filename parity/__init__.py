"""The parity harness: observers of both paths, differ, statistics, reports and the gate."""
