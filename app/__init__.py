"""Xinzhi Metrics (新质指标): city-level 'new quality productive forces' metrics with provenance."""

__version__ = "0.1.0"
