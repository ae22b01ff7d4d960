"""Embedded stand-ins for the stack's services, so one command runs everything on a fresh machine."""
