"""Learned and statistical steps: RFM scoring, clustering, BTYD, CLV models, metrics, drift."""
