"""Images: sources (folders, zips, arrays), decoding, resizing (CPU and device halves) and
image locators. Imports the leaves and files/."""
