"""Test suite for sts-agent."""
