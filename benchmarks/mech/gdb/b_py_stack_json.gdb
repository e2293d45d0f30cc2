# b + json.dumps of the event and a flushed write per hit
source stops.py
starti
python arm("json", "*sb_site")
continue
