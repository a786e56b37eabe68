"""Leaderboard entries: schema, atomic store, rendered tables."""

from robustdeq.leaderboard.render import render as render
from robustdeq.leaderboard.render import table as table
from robustdeq.records.entry import validate_entry as validate_entry
from robustdeq.records.store import read_entries as read_entries
from robustdeq.records.store import read_entry as read_entry
from robustdeq.records.store import write_entry as write_entry
