"""Basics every other part of admc uses and that depend on nothing in it: the one error type and its
formatter, the limits admc enforces on inputs, reading untrusted files and arrays, writing files and
directories atomically, the time schedule of a sampling run, and silencing native libraries' output."""
