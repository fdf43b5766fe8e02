"""The embedded demo: a synthetic orthodontic practice's tables, written as DMS CDC files into a local
folder."""
