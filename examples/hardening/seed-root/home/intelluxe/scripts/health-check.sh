#!/bin/bash
systemctl is-active intelluxe-stack.service
