"""Where entitlement state comes from: the seam between the sidecar and its upstream."""
