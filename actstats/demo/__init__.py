"""The digits demo: its assets (tiny VGG-shaped network, judge, digit folders) and its run."""
