"""The bottom layer: settings, lake paths, Redis discovery, Feast repo opening and the artifact types every
other package reads and writes. It imports no other featurestack package."""
