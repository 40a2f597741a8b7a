"""A word-count service: reads lines of text from one topic, writes running counts to another."""
